//! The usage text (spec §1.3) and the `help` text (spec §9.10), adapted to
//! rmulti: no stale "current directory" claim, since rmulti's defaults really
//! are `%n.pid` and `%n%I.log` in the working directory.

pub const USAGE: &str = "\
usage: multi start <node1 node2 nodeN|range> [worker options]
       multi stop <n1 n2 nN|range> [-SIG (default: -TERM)]
       multi stopwait <n1 n2 nN|range> [-SIG] [--timeout=SECONDS]
       multi restart <n1 n2 nN|range> [-SIG] [--timeout=SECONDS] [worker options]
       multi kill <n1 n2 nN|range>

       multi show <n1 n2 nN|range> [worker options]
       multi get hostname <n1 n2 nN|range> [-qv] [worker options]
       multi names <n1 n2 nN|range>
       multi expand template <n1 n2 nN|range>
       multi help

additional options (must appear after command name):

    * --nosplash:   Don't display program info.
    * --quiet:      Don't show as much output.
    * --verbose:    Show more output.
    * --no-color:   Don't display colors.
";

pub const HELP: &str = "\
Start multiple worker instances from the command-line.

Examples
========

    $ # Single worker with explicit name and events enabled.
    $ rmulti start Leslie -E

    $ # Pidfiles and logfiles are stored in the current directory
    $ # (or --workdir) by default: %n.pid and %n%I.log.  Use --pidfile
    $ # and --logfile to change this.  %n expands to the node's short name.
    $ rmulti start Leslie -E --pidfile=/var/run/celery/%n.pid \\
                             --logfile=/var/log/celery/%n%I.log

    $ # You need to add the same arguments when you restart,
    $ # as these aren't persisted anywhere.
    $ rmulti restart Leslie -E --pidfile=/var/run/celery/%n.pid \\
                               --logfile=/var/log/celery/%n%I.log

    $ # To stop the node, you need to specify the same pidfile.
    $ rmulti stop Leslie --pidfile=/var/run/celery/%n.pid

    $ # 3 workers, with 3 processes each
    $ rmulti start 3 -c 3
    rmulti worker -n celery1@myhost -c 3
    rmulti worker -n celery2@myhost -c 3
    rmulti worker -n celery3@myhost -c 3

    $ # override name prefix when using range
    $ rmulti start 3 --range-prefix=worker -c 3
    rmulti worker -n worker1@myhost -c 3
    rmulti worker -n worker2@myhost -c 3
    rmulti worker -n worker3@myhost -c 3

    $ # start 3 named workers
    $ rmulti start image video data -c 3
    rmulti worker -n image@myhost -c 3
    rmulti worker -n video@myhost -c 3
    rmulti worker -n data@myhost -c 3

    $ # specify custom hostname
    $ rmulti start 2 --hostname=worker.example.com -c 3
    rmulti worker -n celery1@worker.example.com -c 3
    rmulti worker -n celery2@worker.example.com -c 3

    $ # specify fully qualified nodenames
    $ rmulti start foo@worker.example.com bar@worker.example.com -c 3

    $ # fully qualified nodenames but using the current hostname
    $ rmulti start foo@%h bar@%h

    $ # Advanced example starting 10 workers in the background:
    $ #   * Three of the workers processes the images and video queue
    $ #   * Two of the workers processes the data queue with loglevel DEBUG
    $ #   * the rest processes the default' queue.
    $ rmulti start 10 -l INFO -Q:1-3 images,video -Q:4,5 data -Q default -L:4,5 DEBUG

    $ # You can show the commands necessary to start the workers with
    $ # the 'show' command:
    $ rmulti show 10 -l INFO -Q:1-3 images,video -Q:4,5 data -Q default -L:4,5 DEBUG

    $ # Additional options are added to each rmulti worker command,
    $ # but you can also modify the options for ranges of, or specific workers

    $ # 3 workers: Two with 3 processes, and one with 10 processes.
    $ rmulti start 3 -c 3 -c:1 10
    rmulti worker -n celery1@myhost -c 10
    rmulti worker -n celery2@myhost -c 3
    rmulti worker -n celery3@myhost -c 3

    $ # can also specify options for named workers
    $ rmulti start image video data -c 3 -c:image 10
    rmulti worker -n image@myhost -c 10
    rmulti worker -n video@myhost -c 3
    rmulti worker -n data@myhost -c 3

    $ # ranges and lists of workers in options is also allowed:
    $ # (-c:1-3 can also be written as -c:1,2,3)
    $ rmulti start 5 -c 3  -c:1-3 10
    rmulti worker -n celery1@myhost -c 10
    rmulti worker -n celery2@myhost -c 10
    rmulti worker -n celery3@myhost -c 10
    rmulti worker -n celery4@myhost -c 3
    rmulti worker -n celery5@myhost -c 3

    $ # lists also works with named workers
    $ rmulti start foo bar baz xuzzy -c 3 -c:foo,bar,baz 10
    rmulti worker -n foo@myhost -c 10
    rmulti worker -n bar@myhost -c 10
    rmulti worker -n baz@myhost -c 10
    rmulti worker -n xuzzy@myhost -c 3

    $ # stop, waiting at most 30 s before killing what is still running
    $ rmulti stopwait 3 --timeout=30

Exit status: 0 success; 1 a node failed to start or restart, could not be
signalled, had to be killed by stopwait --timeout, or `get` found no node;
2 usage error (unknown command, bad option, bad node index, unknown %-key).
";
