// greeter_async_server: the C++ benchmark peer for our services (docs/benchmarks.md).
//
// The same server as gRPC's examples/cpp/helloworld/greeter_async_server.cc: one ServerCompletionQueue, one
// polling thread (main), a CallData state machine per call, one SayHello request kept armed. Added only what
// the comparison needs: an address flag, mTLS like our services (client certificate required and verified),
// SO_REUSEPORT off like our services, and a clean stop on SIGTERM/SIGINT.
//
// Built only with -DALMA_BENCH=ON (needs libgrpc++-dev); it is a measuring stick, not part of the suite.

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <grpc/grpc.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include "helloworld.grpc.pb.h"

namespace
{

using helloworld::Greeter;
using helloworld::HelloReply;
using helloworld::HelloRequest;

struct Options {
    std::string addr = "127.0.0.1:50051";
    bool tls = false;
    std::string cert, key, ca;
};

void Usage(std::ostream &out)
{
    out << "Usage: greeter_async_server [--addr HOST:PORT] [--tls --cert F --key F --ca F]\n"
           "\n"
           "The C++ async greeter (helloworld.Greeter/SayHello, reply \"Hello \" + name) used as the\n"
           "benchmark peer. One completion queue, one polling thread.\n"
           "\n"
           "  --addr HOST:PORT  listen address (default 127.0.0.1:50051; port 0 picks a free one)\n"
           "  --tls             mTLS: client certificates required and verified against --ca\n"
           "  --cert F --key F  server certificate chain and key (PEM)\n"
           "  --ca F            CA that client certificates must chain to (PEM)\n"
           "  --help            this text\n"
           "\n"
           "Prints \"listening on HOST:PORT\" once serving. SIGTERM or SIGINT stops it: calls in flight get\n"
           "up to 5 s to finish.\n";
}

bool ReadFile(const std::string &path, std::string *out)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::cerr << "greeter_async_server: cannot read " << path << "\n";
        return false;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    return true;
}

// Returns 0 to run, 1 after --help, -1 on bad arguments.
int ParseArgs(int argc, char **argv, Options *opt)
{
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](std::string *dst) {
            if (i + 1 >= argc) {
                std::cerr << "greeter_async_server: " << a << " needs a value\n";
                return false;
            }
            *dst = argv[++i];
            return true;
        };
        if (a == "--help" || a == "-h") {
            Usage(std::cout);
            return 1;
        } else if (a == "--tls") {
            opt->tls = true;
        } else if (a == "--addr") {
            if (!value(&opt->addr))
                return -1;
        } else if (a == "--cert") {
            if (!value(&opt->cert))
                return -1;
        } else if (a == "--key") {
            if (!value(&opt->key))
                return -1;
        } else if (a == "--ca") {
            if (!value(&opt->ca))
                return -1;
        } else {
            std::cerr << "greeter_async_server: unknown argument '" << a << "' (see --help)\n";
            return -1;
        }
    }
    if (opt->addr.empty() || opt->addr.rfind(':') == std::string::npos) {
        std::cerr << "greeter_async_server: --addr must be HOST:PORT\n";
        return -1;
    }
    if (opt->tls && (opt->cert.empty() || opt->key.empty() || opt->ca.empty())) {
        std::cerr << "greeter_async_server: --tls needs --cert, --key and --ca\n";
        return -1;
    }
    if (!opt->tls && (!opt->cert.empty() || !opt->key.empty() || !opt->ca.empty())) {
        std::cerr << "greeter_async_server: --cert, --key and --ca need --tls\n";
        return -1;
    }
    return 0;
}

// One call's life, as in gRPC's example: request it, answer it, free it.
class CallData
{
  public:
    CallData(Greeter::AsyncService *service, grpc::ServerCompletionQueue *cq)
        : service_(service), cq_(cq), responder_(&ctx_)
    {
        service_->RequestSayHello(&ctx_, &request_, &responder_, cq_, cq_, this);
    }

    void Proceed(bool ok)
    {
        if (state_ == State::kProcess) {
            if (!ok) { // the server is shutting down: the request was never matched
                delete this;
                return;
            }
            new CallData(service_, cq_); // keep one request armed
            reply_.set_message("Hello " + request_.name());
            state_ = State::kFinish;
            responder_.Finish(reply_, grpc::Status::OK, this);
        } else {
            delete this;
        }
    }

  private:
    enum class State { kProcess, kFinish };
    Greeter::AsyncService *service_;
    grpc::ServerCompletionQueue *cq_;
    grpc::ServerContext ctx_;
    HelloRequest request_;
    HelloReply reply_;
    grpc::ServerAsyncResponseWriter<HelloReply> responder_;
    State state_ = State::kProcess;
};

} // namespace

int main(int argc, char **argv)
{
    // Block the stop signals before anything starts gRPC (credentials do) its threads (they inherit the
    // mask); one thread sigwaits.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    Options opt;
    int pr = ParseArgs(argc, argv, &opt);
    if (pr != 0)
        return pr > 0 ? 0 : 2;

    std::shared_ptr<grpc::ServerCredentials> creds;
    if (opt.tls) {
        std::string cert, key, ca;
        if (!ReadFile(opt.cert, &cert) || !ReadFile(opt.key, &key) || !ReadFile(opt.ca, &ca))
            return 2;
        grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
        ssl.pem_root_certs = ca;
        ssl.pem_key_cert_pairs.push_back({key, cert});
        creds = grpc::SslServerCredentials(ssl);
    } else {
        creds = grpc::InsecureServerCredentials();
    }

    Greeter::AsyncService service;
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(opt.addr, creds, &port);
    // A second server on the same port must fail loudly instead of sharing it (our services do the same).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::ServerCompletionQueue> cq = builder.AddCompletionQueue();
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || port == 0) {
        std::cerr << "greeter_async_server: cannot listen on " << opt.addr << "\n";
        if (server) {
            server->Shutdown();
            cq->Shutdown();
            void *tag;
            bool ok;
            while (cq->Next(&tag, &ok)) {
            }
        }
        return 1;
    }
    std::string host = opt.addr.substr(0, opt.addr.rfind(':'));
    std::cout << "greeter_async_server listening on " << host << ":" << port << " ("
              << (opt.tls ? "mTLS" : "plaintext") << ")" << std::endl;

    // Stop: Server::Shutdown from the signal thread while main keeps polling (calls in flight must still be
    // completed), then an alarm wakes main, which shuts the queue down itself: no CallData can then arm a new
    // request on a queue that is already shut down.
    grpc::Alarm stop_alarm;
    int stop_tag = 0;
    std::thread stopper([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        std::cerr << "greeter_async_server: signal " << sig << ", shutting down\n";
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
        stop_alarm.Set(cq.get(), gpr_now(GPR_CLOCK_MONOTONIC), &stop_tag);
    });

    new CallData(&service, cq.get());
    void *tag;
    bool ok;
    while (cq->Next(&tag, &ok)) {
        if (tag == &stop_tag) {
            cq->Shutdown();
            continue;
        }
        static_cast<CallData *>(tag)->Proceed(ok);
    }
    stopper.join();
    server.reset();
    std::cerr << "greeter_async_server: stopped\n";
    return 0;
}
