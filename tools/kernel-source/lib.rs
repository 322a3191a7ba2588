// Intentionally empty: this package only names the kernel source as a dependency.
