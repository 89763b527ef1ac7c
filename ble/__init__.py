"""Bytes and radios: the device protocol codec, the bleak link, the bumble backend, the simulator.

Knows nothing of sessions or HTTP and never imports gateway/ or api/.
"""
