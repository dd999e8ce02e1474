"""mtst.runtime"""
