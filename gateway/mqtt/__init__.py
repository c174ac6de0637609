"""The MQTT side: the session link and topic/payload conventions."""
