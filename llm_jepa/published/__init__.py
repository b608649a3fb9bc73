"""The published code's own algorithms, kept only to reproduce its numbers bit for bit.

Nothing on the default path imports from here: each module is reached through a switch of
`behaviour.Published` (all of them when the published code is reproduced whole). Each module says what the
published code did and what the project does instead.
"""
