"""Applications over the library: the ``enhance`` command line (``cli``), files and folders
(``enhance_files``) and the client of a running service (``client``)."""
