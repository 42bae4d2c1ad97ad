"""Publishing: the Quarto site (site, render, records, text) and the Home Office returns workbook."""
