"""Root conftest: makes the fixture modules under tests/fixtures available to every test."""

pytest_plugins = [
    "tests.fixtures.requirements",
    "tests.fixtures.qemu",
    "tests.fixtures.emulator",
    "tests.fixtures.jupyter",
]
