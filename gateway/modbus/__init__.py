"""Modbus RTU over serial (the `modbus` extra: pymodbus).

`registers.py` is pure (which requests to send, registers <-> values); `client.py` is the only
module that calls pymodbus's client; `bus.py` shares one port between the devices on it;
`link.py` is a device's supervised link (polls, writes); `simulator.py` is the server side
(`gateway simulate modbus`, the tests), the only other place that knows pymodbus.
"""
