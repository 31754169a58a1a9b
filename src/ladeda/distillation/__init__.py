"""Distillation: the student map aligned on the teacher grid, the combined loss, the student schedules."""
