"""The sweep side: the summary of every job of a multirun (summary.py writes it; collect, conditions,
statistics, long_table, tables, markdown and figures build its parts).
"""
