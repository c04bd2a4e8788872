#include "daemon/daemon.h"
#include "echo.h"

int main(int argc, char **argv)
{
    const daemon_service svc = {
        .name = "echo",
        .summary = "the runtime's demo and baseline service (alma.echo.v1.Echo)",
        .methods = echo_methods,
        .method_count = echo_method_count,
    };
    return daemon_main(&svc, argc, argv);
}
