"""PlatformIO dev-platform for edgebn's emulated RV32IMC board.

The platform lists no registry packages: the toolchain (riscv64-unknown-elf-gcc + picolibc) and the
emulator (qemu-system-riscv32) come from the host's distribution packages, so a project using it
builds and "uploads" (runs) with no network. builder/main.py holds the build and run recipe.
"""
import shutil

from platformio.public import PlatformBase

# Debian package names, for the one-line message when a host tool is missing.
HOST_TOOLS = {
    "riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf",
    "qemu-system-riscv32": "qemu-system-misc",
}


class Edgebnqemurv32Platform(PlatformBase):
    """The class name is what PlatformIO derives from the manifest name "edgebn-qemu-rv32"."""

    def missing_host_tools(self, tools):
        """Names of the given host tools not on PATH, each with the package that provides it."""
        return [f"{tool} (apt-get install {HOST_TOOLS[tool]})" for tool in tools
                if shutil.which(tool) is None]
