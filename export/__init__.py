"""mtst.export"""
