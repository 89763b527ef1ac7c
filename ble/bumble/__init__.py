"""The bumble backend: bleak's client and scanner driving a bumble central on any HCI transport.

Modules, from the wire up:

- ``host``: a bumble ``Host`` that notices a transport that is gone or a controller that hangs;
- ``radio``: the in-process virtual radio (bumble controllers on one local link) that the
  simulated devices and the hub's central share;
- ``hci_server``: the virtual radio served as HCI over TCP (``mcgw sim``);
- ``adapter``: the hub's central, one bumble ``Device`` on a transport opened by moniker, with
  ``scanning`` (advertisement fan-out) as its part;
- ``client`` / ``scanner``: bleak backends (``BaseBleakClient``, ``BaseBleakScanner``) over an
  adapter, so ble/link.py speaks only bleak's public API whichever backend runs.

Importing this package costs bumble's import time; ble/backends.py imports it only for the
modes that use it. It knows nothing of the microcurrent protocol.
"""
