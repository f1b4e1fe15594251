import DistTrain

DistTrainCommand.main()
