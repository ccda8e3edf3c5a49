"""The conversion command as a script: `python dataset_conversion/mqsm_convert.py ...` is `mqsm_convert ...`
(the code: `mqsm_nnunet.cli.convert` over `mqsm_nnunet.conversion`)."""
import sys

from mqsm_nnunet.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
