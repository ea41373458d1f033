/* test_spm.c: placeholder, filled in by the issue-3 work. */
#include <criterion/criterion.h>
Test(placeholder, spm) { cr_assert(1); }
