"""Device, distributed, I/O, logging and seeding helpers."""
