"""The domain: config, programs, scheduler, sessions, safety, devices, telemetry, storage, runtime.

Knows nothing of HTTP; talks to devices only through ble/.
"""
