"""The device side: serial protocol, QEMU board, PlatformIO, flash, compare, bench. Works from OUT alone."""
