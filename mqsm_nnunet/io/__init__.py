"""Files and formats, the shared ground floor: the checked NIfTI read and write, the one same-grid rule,
label tables and the user's ids against nnU-Net's, atomic files and folders, pairing a case's files,
dataset.json's channel roles and `mqsm` block, nnU-Net's dataset folders and IDs.
"""
