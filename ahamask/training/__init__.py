"""Mask training: the trainer, its loader, schedules and optimizer."""
