"""vigil.firmware_bridge"""
