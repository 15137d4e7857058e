class PaymentDeclined(Exception):
    pass


def run(data):
    raise PaymentDeclined(f"card {data['card']} declined")
