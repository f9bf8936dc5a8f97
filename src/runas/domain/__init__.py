"""The pure domain core: object model, account types, class hierarchy, group membership and
resolution (domain.md §5). Nothing in this package performs I/O."""
