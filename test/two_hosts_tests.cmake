# Two hosts on one machine (test/two_hosts.sh: network + UTS + mount namespaces with their own host names,
# joined by a veth pair; mpirun reaches the second host through an rsh agent): the tiny FLUX.2 pipeline on
# 2 x 2 ranks, Ulysses-2 x TP-2 (TCP between the hosts, shared memory within), gives the same PNG, byte for
# byte, as that mesh on one host, and the single-process image within 1/255 (as every mpi.pipeline mesh).
# Needs root; skipped (77, with the reason) where the kernel refuses the namespaces.
add_test(NAME mpi.two_hosts
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_two_hosts.sh $<TARGET_FILE:ditgen> $<TARGET_FILE:png_diff>
                 ${CMAKE_CURRENT_BINARY_DIR}/two_hosts --parallel ulysses_tp)
set_tests_properties(mpi.two_hosts PROPERTIES TIMEOUT 300 LABELS mpi SKIP_RETURN_CODE 77 PROCESSORS 4)
