"""sliminfer.cli"""
