"""QSM beyond the physics core (`mqsm_nnunet.physics`): the classical inversions a user compares with
(TKD, Tikhonov, TV-ADMM) and the reconstruction losses (paper Eq. 5 and the dipole data-consistency term).
"""
