"""The competition CSV (reading, checking, encodings), the one prompt builder, option orders, sample questions."""
