"""Native execution: the C++ runner (`runtimes/cpp`) built from the executorch wheel, and the
devices it runs on (this host, qemu-aarch64, a board over SSH)."""
