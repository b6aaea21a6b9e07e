"""The doors of the service: the HTTP API (CONTRACT 5) and the platform's request
envelope (CONTRACT 8), generated from one table of operations (`operations`).

They sit above both sides: writes go to the command side as commands over the
bus, reads come from the read model's queries. Nothing below imports from here.
"""
