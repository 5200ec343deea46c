"""Training components: data streaming, losses, EMA, schedules and Trainer subclasses."""
