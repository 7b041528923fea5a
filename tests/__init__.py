"""hindsight test suite; mirrors the packages."""
