"""vigil.edge"""
