"""vigil.kernels"""
