"""Serving (the platform): the codec endpoint's catalogue, limits, request handling and HTTP docs, without Ray; imports the ground, the method and services."""
