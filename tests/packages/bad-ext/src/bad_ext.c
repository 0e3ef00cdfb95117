#include <Python.h>
#include <grocker_header_that_no_package_provides.h>
