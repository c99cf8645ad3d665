module goroscope.test/workloads

go 1.26
