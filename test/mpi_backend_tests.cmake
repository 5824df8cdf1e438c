# The MPI backend itself: an error that MPI reports ends the job naming the rank, the group, the
# operation and MPI's reason (never a silently finished step), and a rank waiting for its peers
# sleeps instead of spinning on a core.
set(MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(EXPECT_FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)

# Rank 0 sends rank 1 a message twice as long as the receive rank 1 posted: MPI_ERR_TRUNCATE.
add_test(NAME mpi.backend_error_names_op
         COMMAND ${EXPECT_FAIL}
                 "\\[rank 1/2\\] error: \\[mpi\\] test message on group world: MPI_Testall failed: MPI_ERR_TRUNCATE"
                 ${MPIRUN} -np 2 $<TARGET_FILE:ditgen_parallel_check> --ulysses 2 --truncate-rank 0 --comm-timeout 30)
# Ranks that disagree on the shapes (an MPMD launch with another image height): the first all_to_all
# ends the job naming the op and the sizes, instead of a truncated message corrupting the heap.
add_test(NAME mpi.backend_disagreeing_sizes
         COMMAND ${EXPECT_FAIL}
                 "\\[rank [01]/2\\] error: \\[mpi\\] all_to_all on group ulysses \\{0,1\\}: world rank [01] sends [0-9]+ bytes where this rank expects [0-9]+: the ranks disagree"
                 ${MPIRUN} -np 1 $<TARGET_FILE:ditgen_parallel_check> --ulysses 2 --img-h 5 --comm-timeout 30
                 : -np 1 $<TARGET_FILE:ditgen_parallel_check> --ulysses 2 --img-h 6 --comm-timeout 30)
set_tests_properties(mpi.backend_error_names_op mpi.backend_disagreeing_sizes PROPERTIES TIMEOUT 90 LABELS mpi)

# Rank 1 stalls; rank 0 waits in its first collective until --comm-timeout. Over 2 s of that wait it
# must use less than a tenth of a core (a spinning wait uses all of one; polling every 50 us used 18%).
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/wait_cpu.sh [=[
#!/bin/sh
# wait_cpu.sh PARALLEL_CHECK, on each rank of mpirun -np 2: prints "wait-cpu: sleeps" or "busy".
set -- "$1" --ulysses 2 --img-h 1 --img-w 2 --txt 3 --batch 1 --stall-rank 1 --comm-timeout 8
[ "$OMPI_COMM_WORLD_RANK" = 0 ] || exec "$@"
"$@" &
pid=$!
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
sleep 3
t0=$(ticks)
sleep 2
t1=$(ticks)
hz=$(getconf CLK_TCK)
echo "waiting rank 0 used $((t1 - t0)) clock ticks in 2 s ($hz per second)"
if [ $((5 * (t1 - t0))) -lt "$hz" ]; then echo "wait-cpu: sleeps"; else echo "wait-cpu: busy"; fi
wait $pid
]=])
add_test(NAME mpi.backend_wait_sleeps
         COMMAND ${MPIRUN} -np 2 sh ${CMAKE_CURRENT_BINARY_DIR}/wait_cpu.sh $<TARGET_FILE:ditgen_parallel_check>)
set_tests_properties(mpi.backend_wait_sleeps PROPERTIES TIMEOUT 90 LABELS mpi PROCESSORS 2
                     PASS_REGULAR_EXPRESSION "wait-cpu: sleeps" FAIL_REGULAR_EXPRESSION "wait-cpu: busy")
