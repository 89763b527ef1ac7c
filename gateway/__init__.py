"""The domain: config, programs, scheduler, sessions, safety, devices, telemetry, storage, CLI.

Knows nothing of HTTP; talks to devices only through ble/.
"""
