"""Assemble: when series and studies are complete, and the jobs their routing makes."""
