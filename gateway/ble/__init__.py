"""Bluetooth LE: scanners per adapter, advertisement devices, GATT connections (issue 5).

Module map:
  errors.py   bleak / D-Bus exceptions -> the gateway's errors (kind + advice)
  hub.py      shared, handle-free state per adapter: devices heard, advert subscribers, slots
  slots.py    per-adapter limit on simultaneous GATT connections
  throttle.py unchanged values are not republished more often than configured
  guard.py    per device: copies of a packet (repeats) and old encrypted counters (replays)
  patterns.py per adapter: scanning mode and the patterns of passive scanning
  scanner.py  ScannerLink: owns the BleakScanner of one adapter (active or passive, with the
              fallback to active); the silent-scanner ladder
  adapter.py  power-cycling an adapter over D-Bus (org.bluez.Adapter1.Powered)
  advert.py   AdvertLink: one advertising device, decoded and throttled
  gatt.py     GattLink: owns one BleakClient: notify, poll, command writes
  scan.py     `gateway scan`
"""
