"""mtst.bench"""
