"""The composition root: the ``mcgw`` command, above the three layers.

``mcgw.cli`` is the one module that may import all of ``api``, ``gateway`` and ``ble``; it picks
what a command needs (the web app for ``serve``, the simulator for ``sim``, storage for the admin
commands) and hands it settings. Nothing imports this package: the layers below run
``api -> gateway -> ble``, and ``tests/test_layers.py`` holds every module to that.
"""
