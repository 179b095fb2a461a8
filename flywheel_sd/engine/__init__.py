"""Compiled-model engine: generated flat-code modules and their integration drivers."""
