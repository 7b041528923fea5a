"""hindsight's composition root: settings, errors, the CLI and the scheduler."""
