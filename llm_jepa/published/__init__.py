"""The published code's own algorithms, kept only to reproduce its numbers bit for bit.

The default path never runs them: each is called only behind a switch of
`behaviour.Published` (all of them when the published code is reproduced whole). Each
module says what the published code did and what the project does instead.
"""
