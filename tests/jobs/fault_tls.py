"""Process-mode fault test: a TLS handshake from inside a child, as any HTTPS call makes
one. Connects to 127.0.0.1:DATA['port'], verifies against the CA file DATA['ca']."""

import socket
import ssl


def run(data):
    context = ssl.create_default_context(cafile=data["ca"])
    with socket.create_connection(("127.0.0.1", data["port"]), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()
