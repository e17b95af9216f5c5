"""Coordination protocols run as ordinary actions between agents on any runners.

Consensus, auctions, leader election, barriers, locks and work distribution; the built-in
`coordinator` agent runs them for callers in any language (PROTOCOL.md "Coordination").
"""
