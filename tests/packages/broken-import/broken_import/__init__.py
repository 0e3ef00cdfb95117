import module_that_does_not_exist  # check must catch this
