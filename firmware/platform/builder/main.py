"""Build and run recipe for edgebn's emulated RV32IMC board (platform edgebn-qemu-rv32).

Compiler flags come from qemu_rv32.flags beside platform.json (one flag per line, the same file the
firmware harness documents), so PlatformIO and edgebn's direct QEMU path build identical firmware.
Flags that only mean something to the linker (-T, -Wl,...) go to the link step only.

`pio run -e qemu_rv32 -t upload` runs the firmware: qemu-system-riscv32 exits with the firmware's
exit code (semihosting), so a failing self-test is a failing upload.
"""
import os
import shlex
import sys

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
platform = env.PioPlatform()

TOOLCHAIN_PREFIX = "riscv64-unknown-elf-"
QEMU = "qemu-system-riscv32"
FLAGS_FILE = os.path.join(platform.get_dir(), "qemu_rv32.flags")


def fail(message):
    sys.stderr.write("Error: %s\n" % message)
    env.Exit(1)


def read_flags(path):
    """One flag per line; a line may hold an option and its argument ("-T picolibc.ld")."""
    if not os.path.isfile(path):
        fail("missing %s; regenerate the project with `edgebn compile`" % path)
    flags = []
    with open(path, encoding="utf-8") as fp:
        for line in fp:
            line = line.strip()
            if line and not line.startswith("#"):
                flags.extend(shlex.split(line))
    return flags


def split_link_only(flags):
    """-T SCRIPT and -Wl,... are linker inputs; everything else applies to compile and link."""
    common, link_only = [], []
    args = iter(flags)
    for flag in args:
        if flag == "-T":
            link_only += [flag, next(args)]
        elif flag.startswith(("-T", "-Wl,")):
            link_only.append(flag)
        else:
            common.append(flag)
    return common, link_only


missing = platform.missing_host_tools([TOOLCHAIN_PREFIX + "gcc"])
if missing:
    fail("host toolchain not found: %s" % ", ".join(missing))

common_flags, link_only_flags = split_link_only(read_flags(FLAGS_FILE))

env.Replace(
    AR=TOOLCHAIN_PREFIX + "ar",
    AS=TOOLCHAIN_PREFIX + "as",
    CC=TOOLCHAIN_PREFIX + "gcc",
    CXX=TOOLCHAIN_PREFIX + "g++",
    GDB=TOOLCHAIN_PREFIX + "gdb",
    OBJCOPY=TOOLCHAIN_PREFIX + "objcopy",
    RANLIB=TOOLCHAIN_PREFIX + "ranlib",
    SIZETOOL=TOOLCHAIN_PREFIX + "size",
    ARFLAGS=["rc"],
    PROGSUFFIX=".elf",
    UPLOADER=QEMU,
    UPLOADERFLAGS=["-M", "virt", "-nographic", "-bios", "none",
                   "-semihosting", "-icount", "shift=0"],
    UPLOADCMD="$UPLOADER $UPLOADERFLAGS -kernel $SOURCE",
)
# ASFLAGS too: startup code or hand-written assembly must agree on -march/-mabi.
env.Append(
    ASFLAGS=list(common_flags),
    CCFLAGS=list(common_flags),
    LINKFLAGS=common_flags + link_only_flags,
)

# PlatformIO names the ELF "firmware" on embedded platforms; edgebn's tools look for firmware.elf.
if env.get("PROGNAME", "program") == "program":
    env.Replace(PROGNAME="firmware")
env.Replace(SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES")

target_elf = env.BuildProgram()
target_size = env.Alias(
    "size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"))
AlwaysBuild(target_size)


def check_emulator(target, source, env):
    missing = platform.missing_host_tools([QEMU])
    if missing:
        sys.stderr.write("Error: emulator not found: %s\n" % ", ".join(missing))
        return 1
    return 0


AlwaysBuild(env.Alias("upload", target_elf, [
    env.VerboseAction(check_emulator, "Looking for %s" % QEMU),
    env.VerboseAction("$UPLOADCMD", "Running $SOURCE in QEMU (RV32IMC virt)"),
]))
Default([target_elf, target_size])
