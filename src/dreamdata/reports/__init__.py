"""Figures and tables built only from run directories, so each can be traced to its config."""
