"""vigil.models"""
