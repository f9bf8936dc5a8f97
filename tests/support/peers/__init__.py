"""Real third-party servers the probes are tested against, each started by the tests from
Debian's packages on a loopback high port with its own throwaway configuration and data
directory, and stopped afterwards (docs/probes/README.md)."""
