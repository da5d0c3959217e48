"""latency/backends"""
