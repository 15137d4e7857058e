"""The web dashboard (optional extra ``sandboxrunner[dashboard]``)."""
